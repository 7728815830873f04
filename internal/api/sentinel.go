package api

import (
	"errors"
	"strings"
)

// MapSentinels turns a component's errors into API errors: an *Error as it
// is, errors wrapping notFound (e.g. "job: not found") into 404 and invalid
// ("job: invalid") into 400, with the sentinel's words trimmed from the
// message; others pass through (500).
func MapSentinels(err, notFound, invalid error) error {
	var ae *Error
	switch {
	case errors.As(err, &ae):
		return err
	case errors.Is(err, notFound):
		return NotFound("%s", strings.TrimPrefix(err.Error(), notFound.Error()+": "))
	case errors.Is(err, invalid):
		return BadRequest("%s", strings.TrimPrefix(err.Error(), invalid.Error()+" "))
	}
	return err
}
