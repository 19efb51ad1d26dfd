#!/usr/bin/env bash
# Make a Helm v3 CLI available for the chart tests (tests/helm). Idempotent, non-interactive.
#
#   scripts/install-helm.sh          prints the path of the helm binary it found or built
#
# Order: `helm` on PATH (if it is v3), then ~/go/bin/helm (or $GOBIN/helm), else build it from
# the Go module proxy with `go install helm.sh/helm/v3/cmd/helm@<version>` (no GitHub download,
# no prebuilt tarball). The first version that builds with the local Go toolchain wins.
# Override the candidates with HELM_VERSIONS="v3.19.0 v3.20.0".
# Measured on 2 cores: cold (empty module and build caches) 8 min wall / 3.8 min CPU while the
# machine was shared (load 10-13); a rebuild with warm caches ~10 s; an existing helm: instant.
set -euo pipefail

HELM_VERSIONS=${HELM_VERSIONS:-"v3.19.0 v3.20.0 v3.18.4"}

is_helm3() {
  # $1: path to a helm binary; true if it runs and reports a full v3.X.Y version. A plain
  # `go install` without our -ldflags says "v3.19" and defaults `helm template` to
  # Kubernetes 1.20, so such a build is rebuilt.
  [ -x "$1" ] || return 1
  local v
  v=$("$1" version --short 2>/dev/null) || return 1
  [[ "$v" =~ ^v3\.[0-9]+\.[0-9]+ ]]
}

found() {
  echo "install-helm.sh: helm $("$1" version --short 2>/dev/null) at $1"
  exit 0
}

if command -v helm >/dev/null 2>&1 && is_helm3 "$(command -v helm)"; then
  found "$(command -v helm)"
fi

if ! command -v go >/dev/null 2>&1; then
  for g in /usr/local/go/bin/go /usr/lib/go/bin/go; do
    if [ -x "$g" ]; then PATH="$(dirname "$g"):$PATH"; break; fi
  done
fi
if ! command -v go >/dev/null 2>&1; then
  echo "install-helm.sh: no helm v3 and no Go toolchain to build it (install Go >= 1.24)" >&2
  exit 1
fi

gobin=$(go env GOBIN)
[ -n "$gobin" ] || gobin="$(go env GOPATH)/bin"
for candidate in "$gobin/helm" "$HOME/go/bin/helm"; do
  if is_helm3 "$candidate"; then found "$candidate"; fi
done

# GOFLAGS=-mod=mod: resolve the module graph from the proxy even if a go.mod is around.
# GOTOOLCHAIN=local: never try to download another toolchain (only the module proxy is reachable).
export GOFLAGS="-mod=mod" GOTOOLCHAIN=local CGO_ENABLED=0
for version in $HELM_VERSIONS; do
  echo "install-helm.sh: building helm $version with $(go version | awk '{print $3}') (go install)..."
  start=$(date +%s)
  # The -X flags are those of Helm's Makefile: the exact release for `helm version`, and the
  # Kubernetes version of its client-go for `helm template`/`lint` defaults (else 1.20).
  k8s_minor=""
  gomod=$(go mod download -json "helm.sh/helm/v3@$version" 2>/dev/null |
    sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",*$/\1/p') || true
  if [ -n "$gomod" ] && [ -f "$gomod" ]; then
    k8s_minor=$(sed -n 's#^[[:space:]]*k8s.io/client-go v0\.\([0-9]*\)\..*#\1#p' "$gomod" | head -1)
  fi
  ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$version"
  if [ -n "$k8s_minor" ]; then
    for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
      ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$k8s_minor"
    done
  fi
  if go install -ldflags "$ldflags" "helm.sh/helm/v3/cmd/helm@$version"; then
    echo "install-helm.sh: built helm $version in $(( $(date +%s) - start )) s"
    if is_helm3 "$gobin/helm"; then found "$gobin/helm"; fi
  fi
  echo "install-helm.sh: helm $version did not build; trying the next version" >&2
done
echo "install-helm.sh: could not build helm (tried: $HELM_VERSIONS)" >&2
exit 1
