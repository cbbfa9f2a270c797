package main

import (
	"fmt"
	"io"
	"os"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/term"
)

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// useConsole decides the encoding: format "console" or "json" as asked;
// "auto" means console for a person at a terminal, JSON for a journal, a
// file or a pipe.
func useConsole(format string, terminal bool) bool {
	switch format {
	case "console":
		return true
	case "json":
		return false
	}
	return terminal
}

// newLogger builds the daemon's logger, writing to w at level (a
// zapcore level name, validated by Config.Validate) in the given format.
// It is the only zap logger devfsd builds; everything else receives it.
func newLogger(w io.Writer, level, format string) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, err
	}
	var enc zapcore.Encoder
	if useConsole(format, isTerminal(w)) {
		ec := zap.NewDevelopmentEncoderConfig()
		ec.EncodeTime = zapcore.TimeEncoderOfLayout("15:04:05.000")
		ec.EncodeLevel = zapcore.CapitalColorLevelEncoder
		if !isTerminal(w) {
			ec.EncodeLevel = zapcore.CapitalLevelEncoder // no colour codes in a file
		}
		enc = zapcore.NewConsoleEncoder(ec)
	} else {
		ec := zap.NewProductionEncoderConfig()
		ec.EncodeTime = zapcore.RFC3339NanoTimeEncoder
		enc = zapcore.NewJSONEncoder(ec)
	}
	core := zapcore.NewCore(enc, zapcore.Lock(zapcore.AddSync(w)), lvl)
	return zap.New(core, zap.ErrorOutput(zapcore.Lock(zapcore.AddSync(w)))), nil
}

// openAuditLog opens the --audit-log file for appending and builds the
// logger that writes the audit log's JSON lines to it; close syncs and
// closes the file. An empty path is no file (a nil logger).
func openAuditLog(path string) (log *zap.Logger, close func(), err error) {
	if path == "" {
		return nil, func() {}, nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0640)
	if err != nil {
		return nil, nil, fmt.Errorf("audit_log: %w", err)
	}
	ec := zap.NewProductionEncoderConfig()
	ec.EncodeTime = zapcore.RFC3339NanoTimeEncoder
	log = zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(ec), zapcore.Lock(f), zapcore.InfoLevel))
	return log, func() { _ = f.Sync(); _ = f.Close() }, nil
}
