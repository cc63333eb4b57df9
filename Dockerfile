# qmpd in a container: one machine per container, QMP on a Unix socket in a volume, the HTTP front
# (REST, QMP over WebSocket, /metrics, dashboard) on port 8080, JSON logs on stdout, SIGTERM handled
# (the machine is saved to the volume and restored at the next start, SHUTDOWN event, sockets removed);
# the bundled firmware's output goes to debugcon.log in the volume.
# tests/integration/test_dockerfile.py runs these same steps without a container engine.
#
# The HTTP front listens on the container's loopback unless given a token: to publish it, run with
#   -e QMPD_HTTP_TOKEN=<secret of 16+ characters> -p 8080:8080 ... <image> <the CMD below with --http 0.0.0.0:8080>

FROM python:3.11-slim AS build
# gcc builds qmpd's Unicorn block hook into the wheel (exact, cheap vCPU stops); binutils and make
# build the guest firmware from its source.
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev binutils make \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md hatch_build.py ./
COPY qmpd ./qmpd
COPY schema ./schema
COPY examples/firmware ./examples/firmware
RUN make -C examples/firmware OUT=/src/qmpd/firmware/qmpd-firmware.bin
RUN pip wheel --no-cache-dir --wheel-dir /dist .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --create-home --home-dir /var/lib/qmpd qmpd
COPY --from=build /dist/ /tmp/dist/
RUN pip install --no-cache-dir --no-index --find-links /tmp/dist qmpd && rm -rf /tmp/dist
# The start-up caches (schema/ in one file, which module handles each command, the derived CPU tables,
# the modules' code in one file) are keyed by the installed files' sizes and mtimes, so they are made
# here, after the install; without them qmpd starts slower but the same.
RUN python -m qmpd.caches
USER qmpd
WORKDIR /var/lib/qmpd
VOLUME ["/var/lib/qmpd"]
EXPOSE 8080
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]
ENTRYPOINT ["qmpd", "--log-format", "json", "--log-file", "/dev/stdout"]
CMD ["-machine", "pc", "-smp", "2", "-debugcon", "file:/var/lib/qmpd/debugcon.log", "-qmp", "unix:/var/lib/qmpd/qmp.sock,server=on,wait=off", "--http", "127.0.0.1:8080", "--state-dir", "/var/lib/qmpd"]
