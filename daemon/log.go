package daemon

import (
	"strings"

	"go.uber.org/zap/zapcore"

	"github.com/devfsd/devfsd/config"
)

// LoggedConfig is cfg as a log field: its file keys, durations and sizes
// as a person writes them.
func LoggedConfig(cfg config.Config) zapcore.ObjectMarshaler { return loggedConfig(cfg) }

type loggedConfig config.Config

func (lc loggedConfig) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	c := config.Config(lc)
	enc.AddString("mountpoint", c.Mountpoint)
	enc.AddString("entry_timeout", c.EntryTimeout.String())
	enc.AddString("attr_timeout", c.AttrTimeout.String())
	enc.AddString("negative_timeout", c.NegativeTimeout.String())
	enc.AddString("loader_timeout", c.LoaderTimeout.String())
	enc.AddString("shutdown_timeout", c.ShutdownTimeout.String())
	enc.AddString("loader", c.Loader)
	if c.Loader == "exec" {
		enc.AddString("exec_program", c.ExecProgram)
		enc.AddString("exec_timeout", c.ExecTimeout.String())
	}
	enc.AddString("devices", c.Devices)
	if c.Devices == "kernel" || c.Devices == "" {
		enc.AddString("modules_devname", c.ModulesDevname)
		enc.AddString("modprobe", c.Modprobe)
	}
	enc.AddString("socket", c.SocketPath(c.Mountpoint))
	enc.AddString("socket_mode", c.SocketMode.String())
	enc.AddInt64("control_uid", c.ControlUID)
	enc.AddInt64("control_gid", c.ControlGID)
	enc.AddBool("mount_over", c.MountOver)
	enc.AddBool("allow_other", c.AllowOther)
	enc.AddBool("default_permissions", c.DefaultPermissions)
	enc.AddBool("dev", c.Dev)
	enc.AddString("readdirplus", c.Readdirplus)
	enc.AddInt64("max_nodes", c.MaxNodes)
	enc.AddString("max_file_size", c.MaxFileSize.String())
	enc.AddString("max_bytes", c.MaxBytes.String())
	enc.AddString("pts", c.Pts)
	enc.AddString("shm", c.Shm)
	enc.AddString("shm_size", c.ShmSize.String())
	enc.AddBool("debug", c.Debug)
	enc.AddString("log_level", c.LogLevel)
	enc.AddString("log_format", c.LogFormat)
	enc.AddString("state_dir", c.StateDir)
	enc.AddString("metrics_addr", c.MetricsAddr)
	enc.AddString("audit_log", c.AuditLog)
	enc.AddString("views_dir", c.ViewsDir)
	names := make([]string, len(c.Modules))
	for i, m := range c.Modules {
		names[i] = m.Name
	}
	enc.AddString("modules", strings.Join(names, ","))
	return nil
}
