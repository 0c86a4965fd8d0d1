package runc

import (
	"fmt"

	"github.com/hypercore-dev/hypercore/internal/spec"
)

// checkID refuses ids that are not workload ids, before they become paths.
func checkID(id string) error {
	if err := spec.ValidateID(id); err != nil {
		return fmt.Errorf("runc driver: %w", err)
	}
	return nil
}
