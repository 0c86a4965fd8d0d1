package server

import (
	"errors"
	"fmt"
	"regexp"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/hypercore-dev/hypercore/internal/spec"
)

// connectOptions hold every Connect, gRPC and gRPC-Web handler to the
// limits REST and the classic routes keep: a message larger than
// spec.MaxBodyBytes once decompressed is refused while it is being
// decompressed (connect counts the decompressed bytes), and the codecs
// refuse unknown fields and keys given twice instead of dropping them.
func connectOptions() []connect.HandlerOption {
	return []connect.HandlerOption{
		connect.WithReadMaxBytes(spec.MaxBodyBytes),
		connect.WithCodec(strictJSONCodec{name: "json"}),
		connect.WithCodec(strictJSONCodec{name: "json; charset=utf-8"}),
		connect.WithCodec(strictProtoCodec{}),
	}
}

// strictJSONCodec is connect's JSON codec without DiscardUnknown: a field
// the schema does not have, including a known one spelled in another case,
// is an error that names it, as is a key given twice.
type strictJSONCodec struct{ name string }

func (c strictJSONCodec) Name() string { return c.name }

func (c strictJSONCodec) Marshal(m any) ([]byte, error) {
	pm, ok := m.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("%T is not a proto message", m)
	}
	return protojson.MarshalOptions{}.Marshal(pm)
}

// protojsonUnknown pulls the field name out of protojson's error for a
// field the schema lacks. Keys given twice never reach protojson:
// spec.CheckStrictJSON refuses them first.
var protojsonUnknown = regexp.MustCompile(`unknown field "?([^" ]+)"?`)

func (c strictJSONCodec) Unmarshal(data []byte, m any) error {
	pm, ok := m.(proto.Message)
	if !ok {
		return fmt.Errorf("%T is not a proto message", m)
	}
	if len(data) == 0 {
		return connect.NewError(connect.CodeInvalidArgument, errors.New("body: is empty; send a JSON object"))
	}
	if err := spec.CheckStrictJSON(data, nil); err != nil {
		return connect.NewError(connect.CodeInvalidArgument, err)
	}
	if err := (protojson.UnmarshalOptions{}).Unmarshal(data, pm); err != nil {
		if sm := protojsonUnknown.FindStringSubmatch(err.Error()); sm != nil {
			return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("%s: is not a known field (keys are case-sensitive)", sm[1]))
		}
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("body: %w", err))
	}
	return nil
}

// strictProtoCodec is connect's binary codec refusing fields the schema
// does not have, which proto.Unmarshal would keep aside silently.
type strictProtoCodec struct{}

func (strictProtoCodec) Name() string { return "proto" }

func (strictProtoCodec) Marshal(m any) ([]byte, error) {
	pm, ok := m.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("%T is not a proto message", m)
	}
	return proto.Marshal(pm)
}

func (strictProtoCodec) Unmarshal(data []byte, m any) error {
	pm, ok := m.(proto.Message)
	if !ok {
		return fmt.Errorf("%T is not a proto message", m)
	}
	if err := proto.Unmarshal(data, pm); err != nil {
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("body: %w", err))
	}
	if path, num, ok := unknownField(pm.ProtoReflect(), ""); ok {
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("%sfield number %d: is not a known field", path, num))
	}
	return nil
}

// unknownField finds a field number m or a message inside it carries that
// the schema does not define.
func unknownField(m protoreflect.Message, path string) (string, protowire.Number, bool) {
	if u := m.GetUnknown(); len(u) > 0 {
		num, _, _ := protowire.ConsumeTag(u)
		return path, num, true
	}
	var (
		foundPath string
		foundNum  protowire.Number
		found     bool
	)
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Kind() != protoreflect.MessageKind && fd.Kind() != protoreflect.GroupKind {
			return true
		}
		sub := path + string(fd.Name()) + "."
		switch {
		case fd.IsList():
			for i := range v.List().Len() {
				if foundPath, foundNum, found = unknownField(v.List().Get(i).Message(), sub); found {
					return false
				}
			}
		case fd.IsMap():
			if fd.MapValue().Kind() == protoreflect.MessageKind {
				v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
					foundPath, foundNum, found = unknownField(mv.Message(), sub)
					return !found
				})
			}
		default:
			foundPath, foundNum, found = unknownField(v.Message(), sub)
		}
		return !found
	})
	return foundPath, foundNum, found
}
