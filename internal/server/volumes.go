package server

import (
	"context"
	"net/http"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	v1 "github.com/hypercore-dev/hypercore/api/hypercore/v1"
	"github.com/hypercore-dev/hypercore/internal/spec"
	"github.com/hypercore-dev/hypercore/internal/volume"
)

// volumeService implements the proto's VolumeService.
type volumeService struct{ s *Server }

// createVolume validates a create at the edge and hands it on.
func (s *Server) createVolume(ctx context.Context, name string, sizeMiB int64) (volume.Info, error) {
	if err := spec.ValidateVolumeName(name); err != nil {
		return volume.Info{}, err
	}
	size, err := spec.VolumeSize(sizeMiB)
	if err != nil {
		return volume.Info{}, err
	}
	return s.b.CreateVolume(ctx, name, size)
}

func volumeProto(v volume.Info) *v1.Volume {
	return &v1.Volume{Name: v.Name, Node: v.Node, SizeMib: v.SizeMiB, CreatedAt: timestamppb.New(v.CreatedAt), UsedBy: v.UsedBy}
}

func (vs *volumeService) CreateVolume(ctx context.Context, req *connect.Request[v1.CreateVolumeRequest]) (*connect.Response[v1.CreateVolumeResponse], error) {
	v, err := vs.s.createVolume(ctx, req.Msg.Name, req.Msg.SizeMib)
	if err != nil {
		return nil, connectErr(err)
	}
	return connect.NewResponse(&v1.CreateVolumeResponse{Volume: volumeProto(v)}), nil
}

func (vs *volumeService) ListVolumes(ctx context.Context, req *connect.Request[v1.ListVolumesRequest]) (*connect.Response[v1.ListVolumesResponse], error) {
	list, err := vs.s.b.Volumes()
	if err != nil {
		return nil, connectErr(err)
	}
	out := &v1.ListVolumesResponse{}
	for _, v := range list {
		out.Volumes = append(out.Volumes, volumeProto(v))
	}
	return connect.NewResponse(out), nil
}

func (vs *volumeService) GetVolume(ctx context.Context, req *connect.Request[v1.GetVolumeRequest]) (*connect.Response[v1.GetVolumeResponse], error) {
	if err := spec.ValidateVolumeName(req.Msg.Name); err != nil {
		return nil, connectErr(err)
	}
	v, err := vs.s.b.Volume(req.Msg.Name)
	if err != nil {
		return nil, connectErr(err)
	}
	return connect.NewResponse(&v1.GetVolumeResponse{Volume: volumeProto(v)}), nil
}

func (vs *volumeService) RemoveVolume(ctx context.Context, req *connect.Request[v1.RemoveVolumeRequest]) (*connect.Response[v1.RemoveVolumeResponse], error) {
	if err := spec.ValidateVolumeName(req.Msg.Name); err != nil {
		return nil, connectErr(err)
	}
	if err := vs.s.b.RemoveVolume(ctx, req.Msg.Name); err != nil {
		return nil, connectErr(err)
	}
	return connect.NewResponse(&v1.RemoveVolumeResponse{}), nil
}

// volumeRoutes are REST's /v1/volumes.
func (s *Server) volumeRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/volumes", func(w http.ResponseWriter, r *http.Request) {
		list, err := s.b.Volumes()
		if err != nil {
			s.fail(w, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"volumes": list})
	})
	mux.HandleFunc("POST /v1/volumes", func(w http.ResponseWriter, r *http.Request) {
		var in struct {
			Name    string `json:"name"`
			SizeMiB int64  `json:"size_mib"`
		}
		if err := spec.DecodeJSON(http.MaxBytesReader(w, r.Body, spec.MaxBodyBytes+1), &in); err != nil {
			s.fail(w, err)
			return
		}
		v, err := s.createVolume(r.Context(), in.Name, in.SizeMiB)
		if err != nil {
			s.fail(w, err)
			return
		}
		writeJSON(w, http.StatusOK, v)
	})
	withName := func(h func(http.ResponseWriter, *http.Request, string)) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			name := r.PathValue("name")
			if err := spec.ValidateVolumeName(name); err != nil {
				s.fail(w, err)
				return
			}
			h(w, r, name)
		}
	}
	mux.HandleFunc("GET /v1/volumes/{name}", withName(func(w http.ResponseWriter, r *http.Request, name string) {
		v, err := s.b.Volume(name)
		if err != nil {
			s.fail(w, err)
			return
		}
		writeJSON(w, http.StatusOK, v)
	}))
	mux.HandleFunc("DELETE /v1/volumes/{name}", withName(func(w http.ResponseWriter, r *http.Request, name string) {
		if err := s.b.RemoveVolume(r.Context(), name); err != nil {
			s.fail(w, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"name": name, "state": "removed"})
	}))
}
