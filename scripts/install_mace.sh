#!/usr/bin/env bash
# Install MACE (mace-torch 0.3.16) next to relaxed_e3nn, on e3nn 0.6.
#
# mace-torch declares e3nn==0.4.4, so a plain `pip install mace-torch` would replace e3nn 0.6 (which
# relaxed_e3nn and NequIP need) and no extra can resolve it. MACE runs on e3nn 0.6 (tested here:
# tests/test_hosts_mace.py), so it is installed without its declared dependencies; its runtime
# dependencies come from the `mace` extra:
#
#     pip install "relaxed_e3nn[mace]"      # MACE's runtime dependencies, e3nn untouched
#     scripts/install_mace.sh [PIP]         # PIP defaults to `python3 -m pip`
#
# Idempotent: running it again changes nothing.
set -euo pipefail
if [ "$#" -gt 0 ]; then PIP=("$1"); else PIP=(python3 -m pip); fi
"${PIP[@]}" install --no-deps "mace-torch==0.3.16"
