package cgroup

import (
	"errors"

	"golang.org/x/sys/unix"
)

type fsStat struct{ isCgroup2 bool }

func statfs(path string, st *fsStat) error {
	var s unix.Statfs_t
	if err := unix.Statfs(path, &s); err != nil {
		return err
	}
	st.isCgroup2 = s.Type == unix.CGROUP2_SUPER_MAGIC
	return nil
}

func isBusy(err error) bool { return errors.Is(err, unix.EBUSY) }
