# syntax=docker/dockerfile:1
# crm-bulk image: the builder stage compiles the Rust core and builds the wheel with maturin; the runtime stage
# is python:3.11-slim with only that wheel and its dependencies installed.
#
#   docker build -t crm-bulk:local .
#   docker run --rm crm-bulk:local crm-bulk --help

ARG PYTHON_IMAGE=python:3.11-slim
ARG RUST_IMAGE=rust:1.95-slim

# The Rust toolchain comes from the official image; only its files are needed, not its base system.
FROM ${RUST_IMAGE} AS rust

FROM ${PYTHON_IMAGE} AS builder
ENV RUSTUP_HOME=/usr/local/rustup \
    CARGO_HOME=/usr/local/cargo \
    PATH=/usr/local/cargo/bin:$PATH \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=rust /usr/local/rustup /usr/local/rustup
COPY --from=rust /usr/local/cargo /usr/local/cargo
# A C linker for the extension module.
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
RUN pip install "maturin>=1.9,<2"
WORKDIR /src
COPY pyproject.toml Cargo.toml Cargo.lock README.md ./
COPY rust rust
# The SQL files live in python/crm_bulk/sql (the top-level sql/ is a link to it), so the wheel carries them.
COPY python python
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    maturin build --release --locked --out /dist

FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CRM_BULK_DATA_DIR=/var/lib/crm-bulk \
    CRM_BULK_API_HOST=0.0.0.0
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/crm-bulk --create-home crm-bulk
COPY --from=builder /dist/ /tmp/wheels/
RUN pip install /tmp/wheels/*.whl && rm -rf /tmp/wheels
USER crm-bulk
WORKDIR /var/lib/crm-bulk
EXPOSE 8000
STOPSIGNAL SIGTERM
CMD ["crm-bulk", "api"]
