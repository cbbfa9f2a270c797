// Package deploy holds the deployment files of devfsd — systemd units,
// the container image build, Kubernetes manifests — and, in its tests,
// their validation, none of which needs a cluster, a Docker engine or
// systemd as PID 1:
//
//   - systemd_test.go: `systemd-analyze verify` of both units (with
//     ExecStart pointed at a freshly built devfsd), rules the units must
//     keep (Type=notify, ExecReload sends SIGHUP, no option that gives the
//     daemon a mount namespace of its own), and the daemon started as the
//     unit starts it — its ExecStart, its CapabilityBoundingSet and
//     NoNewPrivileges applied with setpriv, a NOTIFY_SOCKET — through
//     READY=1, a mknod through the mount, SIGHUP and a clean stop;
//   - kubernetes_test.go: every manifest decoded strictly (unknown or
//     repeated fields, wrong types, bad quantities are errors) into the
//     k8s.io/api types the API server's schema is generated from, plus the
//     checks the API server and this deployment need (Bidirectional
//     propagation only when privileged, probes, hostPath volumes, resource
//     requests, the ConfigMap's keys and files parse);
//   - dockerfile_test.go: the Dockerfile parsed with BuildKit's own parser
//     and checked against the rules hadolint would apply here (hadolint is
//     not packaged for Debian nor a Go module), and the entrypoint script
//     checked with sh -n (and shellcheck when installed).
//
// It is a module of its own (deploy/go.mod), so that k8s.io/api and
// BuildKit stay out of the daemon's module: run it with
//
//	cd deploy && go test ./...
//
// README.md beside this file lists the commands and what they printed.
package deploy
