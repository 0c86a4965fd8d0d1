package server

import (
	"context"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	v1 "github.com/hypercore-dev/hypercore/api/hypercore/v1"
	"github.com/hypercore-dev/hypercore/internal/driver"
	"github.com/hypercore-dev/hypercore/internal/image"
	"github.com/hypercore-dev/hypercore/internal/spec"
	"github.com/hypercore-dev/hypercore/internal/workload"
)

// workloadService implements the proto's WorkloadService.
type workloadService struct{ s *Server }

// specFromProto validates a proto spec through internal/spec.
func specFromProto(p *v1.WorkloadSpec) (spec.Spec, error) {
	if p == nil {
		p = &v1.WorkloadSpec{}
	}
	return spec.Build(spec.Input{
		Image: p.ImageRef, Cores: p.Cores, MemoryMiB: p.Memory, DiskMiB: p.Disk, Ports: p.Ports,
		Env: p.Env, Args: p.Args, Isolation: p.Isolation, Tty: p.Tty, Egress: p.Egress, Secrets: p.Secrets,
		Security: spec.Security{Seccomp: p.GetSecurity().GetSeccomp(), UserNS: p.GetSecurity().GetUserns()},
		Restart:  p.Restart, Volumes: p.Volumes, Entrypoint: p.Entrypoint, Workdir: p.Workdir, User: p.User,
	})
}

// toProto shows w as the proto's Workload: the allocation's spec and node,
// and what that node last observed.
func (s *Server) toProto(w workload.Workload) *v1.Workload {
	ports := make(map[string]int64, len(w.Spec.Ports))
	for k, v := range spec.PortKeys(w.Spec.Ports) {
		ports[k] = int64(v)
	}
	o := w.Observed
	return &v1.Workload{
		Id: w.ID.String(), State: string(o.State), Ip: o.IP, Node: w.Node, Url: s.b.URL(w.ID),
		ImageDigest: o.ImageDigest, CreatedAt: timestamppb.New(w.CreatedAt), Error: o.Error,
		Pid: int32(o.Pid), Ready: o.Ready,
		ExitCode: int32(o.ExitCode), Desired: string(w.Desired), Restarts: int32(o.Restarts),
		Spec: &v1.WorkloadSpec{
			ImageRef: w.Spec.Image, Cores: w.Spec.Cores, Memory: w.Spec.MemoryMiB, Disk: w.Spec.DiskMiB, Ports: ports,
			Env: w.Spec.Env, Isolation: string(w.Spec.Isolation), Args: w.Spec.Args, Tty: w.Spec.Tty,
			Egress: spec.EgressStrings(w.Spec.Egress), Secrets: w.Spec.Secrets,
			Security: securityProto(w.Spec.Security),
			Restart:  w.Spec.Restart, Volumes: w.Spec.Volumes, Entrypoint: w.Spec.Entrypoint,
			Workdir: w.Spec.Workdir, User: w.Spec.User,
		},
	}
}

func (ws *workloadService) Spawn(ctx context.Context, req *connect.Request[v1.SpawnRequest]) (*connect.Response[v1.SpawnResponse], error) {
	sp, err := specFromProto(req.Msg.Spec)
	if err != nil {
		return nil, connectErr(err)
	}
	key, err := requestID(req)
	if err != nil {
		return nil, connectErr(err)
	}
	w, err := ws.s.b.Spawn(ctx, spec.SpawnRequest{Spec: sp, DryRun: req.Msg.DryRun, RequestID: key})
	if err != nil {
		return nil, connectErr(err)
	}
	out := &v1.SpawnResponse{Node: w.Node, Workload: ws.s.toProto(w)}
	if !req.Msg.DryRun {
		out.Id, out.Url = w.ID.String(), ws.s.b.URL(w.ID)
	}
	return connect.NewResponse(out), nil
}

func (ws *workloadService) Get(ctx context.Context, req *connect.Request[v1.GetRequest]) (*connect.Response[v1.GetResponse], error) {
	id, err := spec.ParseID(req.Msg.Id)
	if err != nil {
		return nil, connectErr(err)
	}
	w, err := ws.s.b.Get(id)
	if err != nil {
		return nil, connectErr(err)
	}
	return connect.NewResponse(&v1.GetResponse{Workload: ws.s.toProto(w)}), nil
}

func (ws *workloadService) List(ctx context.Context, req *connect.Request[v1.ListRequest]) (*connect.Response[v1.ListResponse], error) {
	list, err := ws.s.b.List()
	if err != nil {
		return nil, connectErr(err)
	}
	out := &v1.ListResponse{}
	for _, w := range list {
		out.Workloads = append(out.Workloads, ws.s.toProto(w))
	}
	return connect.NewResponse(out), nil
}

func (ws *workloadService) Stop(ctx context.Context, req *connect.Request[v1.StopRequest]) (*connect.Response[v1.StopResponse], error) {
	id, err := spec.ParseID(req.Msg.Id)
	if err != nil {
		return nil, connectErr(err)
	}
	if req.Msg.TimeoutSeconds < 0 || req.Msg.TimeoutSeconds > 3600 {
		return nil, connectErr(&spec.FieldError{Field: "timeout_seconds", Msg: "must be 0-3600"})
	}
	w, err := ws.s.b.Stop(ctx, id, time.Duration(req.Msg.TimeoutSeconds)*time.Second)
	if err != nil {
		return nil, connectErr(err)
	}
	return connect.NewResponse(&v1.StopResponse{Workload: ws.s.toProto(w)}), nil
}

func (ws *workloadService) Start(ctx context.Context, req *connect.Request[v1.StartRequest]) (*connect.Response[v1.StartResponse], error) {
	id, err := spec.ParseID(req.Msg.Id)
	if err != nil {
		return nil, connectErr(err)
	}
	w, err := ws.s.b.Start(ctx, id)
	if err != nil {
		return nil, connectErr(err)
	}
	return connect.NewResponse(&v1.StartResponse{Workload: ws.s.toProto(w)}), nil
}

func (ws *workloadService) Remove(ctx context.Context, req *connect.Request[v1.RemoveRequest]) (*connect.Response[v1.RemoveResponse], error) {
	id, err := spec.ParseID(req.Msg.Id)
	if err != nil {
		return nil, connectErr(err)
	}
	if err := ws.s.b.Remove(ctx, id); err != nil {
		return nil, connectErr(err)
	}
	return connect.NewResponse(&v1.RemoveResponse{}), nil
}

func (ws *workloadService) Logs(ctx context.Context, req *connect.Request[v1.LogsRequest], stream *connect.ServerStream[v1.LogsResponse]) error {
	id, err := spec.ParseID(req.Msg.Id)
	if err != nil {
		return connectErr(err)
	}
	if req.Msg.Tail < 0 || req.Msg.Tail > spec.MaxLogTail {
		return connectErr(&spec.FieldError{Field: "tail", Msg: "is out of range"})
	}
	rc, err := ws.s.b.Logs(ctx, id, driver.LogOptions{Follow: req.Msg.Follow, Tail: int(req.Msg.Tail)})
	if err != nil {
		return connectErr(err)
	}
	defer rc.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := rc.Read(buf)
		if n > 0 {
			if serr := stream.Send(&v1.LogsResponse{Data: buf[:n]}); serr != nil {
				return serr
			}
		}
		if err != nil {
			return nil
		}
	}
}

func (ws *workloadService) Pull(ctx context.Context, req *connect.Request[v1.PullRequest], stream *connect.ServerStream[v1.PullResponse]) error {
	ref, err := spec.ValidateImageRef(req.Msg.ImageRef)
	if err != nil {
		return connectErr(err)
	}
	img, err := ws.s.b.Pull(ctx, ref, func(p image.Progress) {
		stream.Send(&v1.PullResponse{Layer: p.Layer, CompleteBytes: p.CompleteBytes, TotalBytes: p.TotalBytes})
	})
	if err != nil {
		return connectErr(err)
	}
	return stream.Send(&v1.PullResponse{Digest: img.Digest, Done: true})
}

// nodeService implements the proto's NodeService.
type nodeService struct{ s *Server }

func (ns *nodeService) Info(ctx context.Context, req *connect.Request[v1.InfoRequest]) (*connect.Response[v1.InfoResponse], error) {
	info := ns.s.b.Info()
	out := &v1.InfoResponse{
		Name: info.Name, Version: ns.s.opts.Version, Cores: info.Cores, Memory: info.MemoryMiB,
		BaseDomain: info.BaseDomain, ApiAddr: info.APIAddr, MicrovmAccel: info.MicroVMAccel,
	}
	for _, iso := range info.Isolations {
		out.Isolations = append(out.Isolations, string(iso))
	}
	return connect.NewResponse(out), nil
}

func (ns *nodeService) PruneImages(ctx context.Context, req *connect.Request[v1.PruneImagesRequest]) (*connect.Response[v1.PruneImagesResponse], error) {
	res, err := ns.s.b.PruneImages(ctx)
	if err != nil {
		return nil, connectErr(err)
	}
	return connect.NewResponse(&v1.PruneImagesResponse{Removed: res.Removed, FreedBytes: res.Freed}), nil
}

// requestID is a Connect spawn's idempotency key: the request_id field,
// or the Idempotency-Key header as on REST. Both, if different, are a
// client's mistake.
func requestID(req *connect.Request[v1.SpawnRequest]) (string, error) {
	field, header := req.Msg.RequestId, req.Header().Get(IdempotencyKeyHeader)
	if field != "" && header != "" && field != header {
		return "", &spec.FieldError{Field: spec.RequestIDField, Msg: "differs from the " + IdempotencyKeyHeader + " header; send one of them"}
	}
	if field == "" {
		field = header
	}
	return spec.ParseRequestID(field)
}

// securityProto shows a spec's security settings, defaults filled in.
func securityProto(s spec.Security) *v1.Security {
	s = s.OrDefaults()
	return &v1.Security{Seccomp: s.Seccomp, Userns: s.UserNS}
}
