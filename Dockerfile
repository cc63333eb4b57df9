# qmpd in a container: one machine per container, QMP on a Unix socket in a volume,
# JSON logs on stdout/stderr, SIGTERM handled (SHUTDOWN event, sockets removed); the
# bundled firmware's output goes to debugcon.log in the volume.
# tests/integration/test_dockerfile.py runs these same steps without a container engine.

FROM python:3.11-slim AS build
# A C compiler builds qmpd's Unicorn block hook into the wheel (exact, cheap vCPU stops).
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md hatch_build.py ./
COPY qmpd ./qmpd
COPY schema ./schema
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /dist .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --create-home --home-dir /var/lib/qmpd qmpd
COPY --from=build /dist/ /tmp/dist/
RUN pip install --no-cache-dir /tmp/dist/*.whl && rm -rf /tmp/dist
USER qmpd
WORKDIR /var/lib/qmpd
VOLUME ["/var/lib/qmpd"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["qmpd", "--log-format", "json"]
CMD ["-machine", "pc", "-smp", "2", "-debugcon", "file:/var/lib/qmpd/debugcon.log", "-qmp", "unix:/var/lib/qmpd/qmp.sock,server=on,wait=off"]
