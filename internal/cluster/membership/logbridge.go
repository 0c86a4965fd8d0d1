package membership

import (
	"bytes"
	"context"
	"log"
	"log/slog"
	"strings"
)

// slogWriter turns serf's and memberlist's "[LEVEL] component: message"
// lines into slog records, so their logs land with the rest of the node's
// and at the right level. memberlist logs every stream connection at DEBUG;
// mapping levels keeps that noise out of INFO.
type slogWriter struct {
	log *slog.Logger
}

func newStdLogger(l *slog.Logger) *log.Logger {
	return log.New(slogWriter{log: l}, "", 0)
}

func (w slogWriter) Write(p []byte) (int, error) {
	line := string(bytes.TrimRight(p, "\r\n"))
	level := slog.LevelInfo
	if strings.HasPrefix(line, "[") {
		if end := strings.IndexByte(line, ']'); end > 0 {
			switch line[1:end] {
			case "TRACE", "DEBUG":
				level = slog.LevelDebug
			case "INFO":
				level = slog.LevelInfo
			case "WARN":
				level = slog.LevelWarn
			case "ERR", "ERROR":
				level = slog.LevelError
			}
			line = strings.TrimSpace(line[end+1:])
		}
	}
	component := "serf"
	if name, rest, ok := strings.Cut(line, ": "); ok && !strings.ContainsAny(name, " \t") {
		component, line = name, rest
	}
	w.log.Log(context.Background(), level, line, "component", component)
	return len(p), nil
}
