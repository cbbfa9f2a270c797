module github.com/devfsd/devfsd

go 1.26.8

require (
	github.com/hanwen/go-fuse/v2 v2.12.1 // indirect
	go.uber.org/multierr v1.10.0 // indirect
	go.uber.org/zap v1.28.0 // indirect
)
