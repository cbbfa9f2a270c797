// countingFS: one method per fuse.RawFileSystem method of go-fuse v2.12.1,
// each counting its opcode and passing the call on. A method added to the
// interface later is passed on uncounted (through the embedded interface).

package main

import "github.com/hanwen/go-fuse/v2/fuse"

// Opcode indexes into countingFS.n, one per FUSE opcode the server sees.
const (
	opACCESS = iota
	opCOPYFILERANGE
	opCREATE
	opFALLOCATE
	opFLUSH
	opFORGET
	opFSYNC
	opFSYNCDIR
	opGETATTR
	opGETLK
	opGETXATTR
	opINIT
	opIOCTL
	opLINK
	opLISTXATTR
	opLOOKUP
	opLSEEK
	opMKDIR
	opMKNOD
	opOPEN
	opOPENDIR
	opREAD
	opREADDIR
	opREADDIRPLUS
	opREADLINK
	opRELEASE
	opRELEASEDIR
	opREMOVEXATTR
	opRENAME
	opRMDIR
	opSETATTR
	opSETLK
	opSETLKW
	opSETXATTR
	opSTATFS
	opSTATX
	opSYMLINK
	opTMPFILE
	opUNLINK
	opWRITE
	numOps
)

var opNames = [numOps]string{
	opACCESS:        "ACCESS",
	opCOPYFILERANGE: "COPY_FILE_RANGE",
	opCREATE:        "CREATE",
	opFALLOCATE:     "FALLOCATE",
	opFLUSH:         "FLUSH",
	opFORGET:        "FORGET",
	opFSYNC:         "FSYNC",
	opFSYNCDIR:      "FSYNCDIR",
	opGETATTR:       "GETATTR",
	opGETLK:         "GETLK",
	opGETXATTR:      "GETXATTR",
	opINIT:          "INIT",
	opIOCTL:         "IOCTL",
	opLINK:          "LINK",
	opLISTXATTR:     "LISTXATTR",
	opLOOKUP:        "LOOKUP",
	opLSEEK:         "LSEEK",
	opMKDIR:         "MKDIR",
	opMKNOD:         "MKNOD",
	opOPEN:          "OPEN",
	opOPENDIR:       "OPENDIR",
	opREAD:          "READ",
	opREADDIR:       "READDIR",
	opREADDIRPLUS:   "READDIRPLUS",
	opREADLINK:      "READLINK",
	opRELEASE:       "RELEASE",
	opRELEASEDIR:    "RELEASEDIR",
	opREMOVEXATTR:   "REMOVEXATTR",
	opRENAME:        "RENAME",
	opRMDIR:         "RMDIR",
	opSETATTR:       "SETATTR",
	opSETLK:         "SETLK",
	opSETLKW:        "SETLKW",
	opSETXATTR:      "SETXATTR",
	opSTATFS:        "STATFS",
	opSTATX:         "STATX",
	opSYMLINK:       "SYMLINK",
	opTMPFILE:       "TMPFILE",
	opUNLINK:        "UNLINK",
	opWRITE:         "WRITE",
}

func (c *countingFS) Lookup(cancel <-chan struct{}, header *fuse.InHeader, name string, out *fuse.EntryOut) (status fuse.Status) {
	c.n[opLOOKUP].Add(1)
	return c.RawFileSystem.Lookup(cancel, header, name, out)
}

func (c *countingFS) Forget(nodeid, nlookup uint64) {
	c.n[opFORGET].Add(1)
	c.RawFileSystem.Forget(nodeid, nlookup)
}

func (c *countingFS) GetAttr(cancel <-chan struct{}, input *fuse.GetAttrIn, out *fuse.AttrOut) (code fuse.Status) {
	c.n[opGETATTR].Add(1)
	return c.RawFileSystem.GetAttr(cancel, input, out)
}

func (c *countingFS) SetAttr(cancel <-chan struct{}, input *fuse.SetAttrIn, out *fuse.AttrOut) (code fuse.Status) {
	c.n[opSETATTR].Add(1)
	return c.RawFileSystem.SetAttr(cancel, input, out)
}

func (c *countingFS) Mknod(cancel <-chan struct{}, input *fuse.MknodIn, name string, out *fuse.EntryOut) (code fuse.Status) {
	c.n[opMKNOD].Add(1)
	return c.RawFileSystem.Mknod(cancel, input, name, out)
}

func (c *countingFS) Mkdir(cancel <-chan struct{}, input *fuse.MkdirIn, name string, out *fuse.EntryOut) (code fuse.Status) {
	c.n[opMKDIR].Add(1)
	return c.RawFileSystem.Mkdir(cancel, input, name, out)
}

func (c *countingFS) Unlink(cancel <-chan struct{}, header *fuse.InHeader, name string) (code fuse.Status) {
	c.n[opUNLINK].Add(1)
	return c.RawFileSystem.Unlink(cancel, header, name)
}

func (c *countingFS) Rmdir(cancel <-chan struct{}, header *fuse.InHeader, name string) (code fuse.Status) {
	c.n[opRMDIR].Add(1)
	return c.RawFileSystem.Rmdir(cancel, header, name)
}

func (c *countingFS) Rename(cancel <-chan struct{}, input *fuse.RenameIn, oldName string, newName string) (code fuse.Status) {
	c.n[opRENAME].Add(1)
	return c.RawFileSystem.Rename(cancel, input, oldName, newName)
}

func (c *countingFS) Link(cancel <-chan struct{}, input *fuse.LinkIn, filename string, out *fuse.EntryOut) (code fuse.Status) {
	c.n[opLINK].Add(1)
	return c.RawFileSystem.Link(cancel, input, filename, out)
}

func (c *countingFS) Symlink(cancel <-chan struct{}, header *fuse.InHeader, pointedTo string, linkName string, out *fuse.EntryOut) (code fuse.Status) {
	c.n[opSYMLINK].Add(1)
	return c.RawFileSystem.Symlink(cancel, header, pointedTo, linkName, out)
}

func (c *countingFS) Readlink(cancel <-chan struct{}, header *fuse.InHeader) (out []byte, code fuse.Status) {
	c.n[opREADLINK].Add(1)
	return c.RawFileSystem.Readlink(cancel, header)
}

func (c *countingFS) Access(cancel <-chan struct{}, input *fuse.AccessIn) (code fuse.Status) {
	c.n[opACCESS].Add(1)
	return c.RawFileSystem.Access(cancel, input)
}

func (c *countingFS) GetXAttr(cancel <-chan struct{}, header *fuse.InHeader, attr string, dest []byte) (sz uint32, code fuse.Status) {
	c.n[opGETXATTR].Add(1)
	return c.RawFileSystem.GetXAttr(cancel, header, attr, dest)
}

func (c *countingFS) ListXAttr(cancel <-chan struct{}, header *fuse.InHeader, dest []byte) (uint32, fuse.Status) {
	c.n[opLISTXATTR].Add(1)
	return c.RawFileSystem.ListXAttr(cancel, header, dest)
}

func (c *countingFS) SetXAttr(cancel <-chan struct{}, input *fuse.SetXAttrIn, attr string, data []byte) fuse.Status {
	c.n[opSETXATTR].Add(1)
	return c.RawFileSystem.SetXAttr(cancel, input, attr, data)
}

func (c *countingFS) RemoveXAttr(cancel <-chan struct{}, header *fuse.InHeader, attr string) (code fuse.Status) {
	c.n[opREMOVEXATTR].Add(1)
	return c.RawFileSystem.RemoveXAttr(cancel, header, attr)
}

func (c *countingFS) Create(cancel <-chan struct{}, input *fuse.CreateIn, name string, out *fuse.CreateOut) (code fuse.Status) {
	c.n[opCREATE].Add(1)
	return c.RawFileSystem.Create(cancel, input, name, out)
}

func (c *countingFS) Tmpfile(cancel <-chan struct{}, input *fuse.CreateIn, out *fuse.CreateOut) (code fuse.Status) {
	c.n[opTMPFILE].Add(1)
	return c.RawFileSystem.Tmpfile(cancel, input, out)
}

func (c *countingFS) Open(cancel <-chan struct{}, input *fuse.OpenIn, out *fuse.OpenOut) (status fuse.Status) {
	c.n[opOPEN].Add(1)
	return c.RawFileSystem.Open(cancel, input, out)
}

func (c *countingFS) Read(cancel <-chan struct{}, input *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	c.n[opREAD].Add(1)
	return c.RawFileSystem.Read(cancel, input, buf)
}

func (c *countingFS) Lseek(cancel <-chan struct{}, in *fuse.LseekIn, out *fuse.LseekOut) fuse.Status {
	c.n[opLSEEK].Add(1)
	return c.RawFileSystem.Lseek(cancel, in, out)
}

func (c *countingFS) GetLk(cancel <-chan struct{}, input *fuse.LkIn, out *fuse.LkOut) (code fuse.Status) {
	c.n[opGETLK].Add(1)
	return c.RawFileSystem.GetLk(cancel, input, out)
}

func (c *countingFS) SetLk(cancel <-chan struct{}, input *fuse.LkIn) (code fuse.Status) {
	c.n[opSETLK].Add(1)
	return c.RawFileSystem.SetLk(cancel, input)
}

func (c *countingFS) SetLkw(cancel <-chan struct{}, input *fuse.LkIn) (code fuse.Status) {
	c.n[opSETLKW].Add(1)
	return c.RawFileSystem.SetLkw(cancel, input)
}

func (c *countingFS) Release(cancel <-chan struct{}, input *fuse.ReleaseIn) {
	c.n[opRELEASE].Add(1)
	c.RawFileSystem.Release(cancel, input)
}

func (c *countingFS) Write(cancel <-chan struct{}, input *fuse.WriteIn, data []byte) (written uint32, code fuse.Status) {
	c.n[opWRITE].Add(1)
	return c.RawFileSystem.Write(cancel, input, data)
}

func (c *countingFS) Writev(cancel <-chan struct{}, input *fuse.WriteIn, data [][]byte) (written uint32, code fuse.Status) {
	c.n[opWRITE].Add(1)
	return c.RawFileSystem.Writev(cancel, input, data)
}

func (c *countingFS) CopyFileRange(cancel <-chan struct{}, input *fuse.CopyFileRangeIn) (written uint32, code fuse.Status) {
	c.n[opCOPYFILERANGE].Add(1)
	return c.RawFileSystem.CopyFileRange(cancel, input)
}

func (c *countingFS) Ioctl(cancel <-chan struct{}, input *fuse.IoctlIn, inbuf []byte, output *fuse.IoctlOut, outbuf []byte) (code fuse.Status) {
	c.n[opIOCTL].Add(1)
	return c.RawFileSystem.Ioctl(cancel, input, inbuf, output, outbuf)
}

func (c *countingFS) Flush(cancel <-chan struct{}, input *fuse.FlushIn) fuse.Status {
	c.n[opFLUSH].Add(1)
	return c.RawFileSystem.Flush(cancel, input)
}

func (c *countingFS) Fsync(cancel <-chan struct{}, input *fuse.FsyncIn) (code fuse.Status) {
	c.n[opFSYNC].Add(1)
	return c.RawFileSystem.Fsync(cancel, input)
}

func (c *countingFS) Fallocate(cancel <-chan struct{}, input *fuse.FallocateIn) (code fuse.Status) {
	c.n[opFALLOCATE].Add(1)
	return c.RawFileSystem.Fallocate(cancel, input)
}

func (c *countingFS) OpenDir(cancel <-chan struct{}, input *fuse.OpenIn, out *fuse.OpenOut) (status fuse.Status) {
	c.n[opOPENDIR].Add(1)
	return c.RawFileSystem.OpenDir(cancel, input, out)
}

func (c *countingFS) ReadDir(cancel <-chan struct{}, input *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	c.n[opREADDIR].Add(1)
	return c.RawFileSystem.ReadDir(cancel, input, out)
}

func (c *countingFS) ReadDirPlus(cancel <-chan struct{}, input *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	c.n[opREADDIRPLUS].Add(1)
	return c.RawFileSystem.ReadDirPlus(cancel, input, out)
}

func (c *countingFS) ReleaseDir(input *fuse.ReleaseIn) {
	c.n[opRELEASEDIR].Add(1)
	c.RawFileSystem.ReleaseDir(input)
}

func (c *countingFS) FsyncDir(cancel <-chan struct{}, input *fuse.FsyncIn) (code fuse.Status) {
	c.n[opFSYNCDIR].Add(1)
	return c.RawFileSystem.FsyncDir(cancel, input)
}

func (c *countingFS) StatFs(cancel <-chan struct{}, input *fuse.InHeader, out *fuse.StatfsOut) (code fuse.Status) {
	c.n[opSTATFS].Add(1)
	return c.RawFileSystem.StatFs(cancel, input, out)
}

func (c *countingFS) Statx(cancel <-chan struct{}, input *fuse.StatxIn, out *fuse.StatxOut) (code fuse.Status) {
	c.n[opSTATX].Add(1)
	return c.RawFileSystem.Statx(cancel, input, out)
}

func (c *countingFS) Init(s *fuse.Server) {
	c.n[opINIT].Add(1)
	c.RawFileSystem.Init(s)
}
