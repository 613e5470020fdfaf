#!/usr/bin/env bash
# Validates the Kubernetes manifests against the API schemas, offline, with
# PyPI's kubernetes-validate (it bundles the schemas), strictly (unknown
# fields are errors), for the oldest and newest Kubernetes versions we
# target. Installs the pinned checker into a venv under ~/.cache/attestd on
# first use. Run by `./dev ci`. It checks shape, not behaviour: the
# manifests have not been applied to a live cluster here.
set -euo pipefail
cd "$(dirname "$0")"
version=1.37.0
venv="${ATTESTD_K8S_VENV:-$HOME/.cache/attestd/k8s-validate-$version}"
if [ ! -x "$venv/bin/kubernetes-validate" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "kubernetes-validate==$version"
fi
manifests=(namespace.yaml eastus2.yaml centralus.yaml gateway.yaml)
for k in 1.30.0 1.37.0; do
  "$venv/bin/kubernetes-validate" --strict --no-warn --quiet -k "$k" "${manifests[@]}"
done
echo "k8s manifests: valid for Kubernetes 1.30 and 1.37 (${manifests[*]})"
