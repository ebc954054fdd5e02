#!/usr/bin/env bash
# Fetch, into the git-ignored .whl/, the wheels `serve_check.sh` installs on a GPU machine without
# network access: the server's dependencies that its image lacks, pinned to what `make test`
# installs here. Python 3.12, manylinux x86-64. Run here, then copy .whl along.
set -euo pipefail
cd "$(dirname "$0")/../../.."
grep -qx '/.whl/' .git/info/exclude || echo /.whl/ >> .git/info/exclude
rm -rf .whl && mkdir -p .whl
PINS=(fastapi==0.165.0 starlette==1.10.0 pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0
      typing-inspection==0.4.5 typing_extensions==4.16.0 opentelemetry-api==1.45.2 uvicorn==0.54.0
      python-multipart==0.0.34 llguidance==1.9.1 feedparser==6.0.14 feedparser-sgmllib==2.1.0)
PLATFORMS=()
for p in manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux_2_28_x86_64 manylinux_2_31_x86_64 any; do
  PLATFORMS+=(--platform "$p")
done
for pin in "${PINS[@]}"; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${PLATFORMS[@]}" -d .whl "$pin"
done
ls .whl
