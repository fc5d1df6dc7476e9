#!/bin/sh
# Offline stand-in: `bazel coverage` needs Bazel's downloaded coverage tools, which this workspace does not fetch.
echo "bazel coverage is not available offline (@remote_coverage_tools is a stand-in); use bazel test" >&2
exit 1
