package backends

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

// TestInstanceName: the lease owner, the status's lastRefreshBy and the
// start log name the instance as the Functions host does
// (EnvironmentExtensions.GetInstanceId): WEBSITE_POD_NAME on Flex
// Consumption, which sets no WEBSITE_INSTANCE_ID.
func TestInstanceName(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want string
	}{
		{"Flex Consumption", map[string]string{"WEBSITE_POD_NAME": "flex-pod-7d9f", "CONTAINER_NAME": "container-1", "COMPUTERNAME": "ignored"}, "flex-pod-7d9f"},
		{"Flex, were an instance id also set", map[string]string{"WEBSITE_POD_NAME": "flex-pod-7d9f", "WEBSITE_INSTANCE_ID": "abc123"}, "flex-pod-7d9f"},
		{"Linux Consumption without a pod name", map[string]string{"CONTAINER_NAME": "container-1"}, "container-1"},
		{"App Service plans", map[string]string{"WEBSITE_INSTANCE_ID": "abc123", "COMPUTERNAME": "dw0sdwk000001"}, "abc123"},
		{"Windows machine", map[string]string{"COMPUTERNAME": "DESKTOP-1"}, "DESKTOP-1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := InstanceName(func(k string) string { return tt.env[k] }); got != tt.want {
				t.Errorf("InstanceName = %q, want %q", got, tt.want)
			}
		})
	}
	got := InstanceName(func(string) string { return "" })
	host, _ := os.Hostname()
	if !strings.HasPrefix(got, host+"-") || !strings.HasSuffix(got, "-"+strconv.Itoa(os.Getpid())) {
		t.Errorf("with no platform variable: %q, want host name and pid", got)
	}
}
