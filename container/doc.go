// Package container is Tangram's container runtime: it runs OCI runtime
// bundles (a config.json and a root filesystem) the way runc does, and
// containers made from images in a container/image store on overlayfs.
//
// A container is a process in namespaces of its own. Create re-executes
// this program (/proc/self/exe) as the container's init with the PID,
// mount, UTS, IPC, network (and, when asked, user) namespaces given to
// clone; a package init function catches the init before main runs. The
// init reads its orders from a socket, mounts /proc, /dev (with the
// standard devices), /dev/pts, /dev/shm, /dev/mqueue and /sys below the
// root filesystem, pivots into it and detaches the old root, masks and
// write-protects runc's default paths, sets the hostname, rlimits, user,
// capability sets and no_new_privs, reports ready, and waits on a FIFO.
// Start opens the FIFO; the init execs the container's process, which is
// then PID 1 of the container. The cgroup (container/cgroup: v1 or v2,
// detected) is joined before the init runs a single instruction of setup
// (clone3 into the group in v2; in v1 the parent adds it while the init
// waits for its orders).
//
// Every method works from any process: state lives in one directory per
// container under Config.Root, written atomically, and names the init by
// PID and start time so that a reused PID is never taken for it. A
// runtime killed at any moment leaves its containers running; the next
// one finds them and can stop and delete them.
package container
