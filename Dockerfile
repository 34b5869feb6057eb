# One image for the whole mesh: control plane (`python -m mesh.control`), sidecar and ingress gateway
# (`python -m mesh.proxy`) and the bookinfo-lite apps (`python -m bookinfo`). Built and pushed by CI;
# the stack's `weir:image` names it. Build: docker build -t REGISTRY/weir:TAG .

# --- build: wheels for the project and its dependencies (compilers stay in this stage) ---
FROM python:3.11-slim AS build
WORKDIR /src
# gcc compiles the telemetry helpers (mesh/proxy/_speedups.pyx) into the wheel; without it they would be
# skipped and the sidecars would run telemetry in pure Python (the runtime stage checks they are there).
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
RUN pip install --no-cache-dir --upgrade pip
COPY pyproject.toml setup.py README.md ./
COPY mesh ./mesh
COPY bookinfo ./bookinfo
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# --- runtime: no build tools, no sources beyond the installed packages, non-root ---
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN groupadd --system --gid 10001 weir \
    && useradd --system --uid 10001 --gid weir --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin weir
COPY --from=build /wheels /wheels
RUN pip install --no-index --find-links=/wheels --compile weir \
    && rm -rf /wheels \
    && pip uninstall --yes pip setuptools wheel \
    && python -c "import mesh.proxy._speedups"
WORKDIR /var/run/weir
USER 10001:10001
# The pods' command picks the component; this default only shows the CLI.
CMD ["meshctl", "--help"]
