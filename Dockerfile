# extension-server:latest — `make image`.
# Two stages: the first builds a virtual environment from this checkout with the pinned
# dependencies of requirements.lock; the second copies only that environment onto a clean
# slim Python, runs as an unprivileged user and starts `extension-server serve`.
# For production, pin the base image by digest as well (python:3.11-slim-bookworm@sha256:...).

FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY requirements.lock pyproject.toml README.md ./
COPY compiler ./compiler
COPY backends ./backends
COPY server ./server
# `python -m venv` would put pip and setuptools (3.11's ensurepip) into the environment, and
# they would ship: create it without them and install into it with the base image's pip. The
# project's build backend lives only in pip's isolated build environment. The last command
# fails the build if pip, setuptools or wheel got into the environment all the same.
RUN python -m venv --without-pip /opt/extension-server \
 && python -m pip --python /opt/extension-server/bin/python install --constraint requirements.lock . \
 && /opt/extension-server/bin/python -c "import importlib.util, sys; found = [m for m in ('pip', 'setuptools', 'wheel') if importlib.util.find_spec(m)]; sys.exit(f'left in /opt/extension-server: {found}' if found else 0)"

FROM python:3.11-slim-bookworm
LABEL org.opencontainers.image.title="extension-server" \
      org.opencontainers.image.description="Envoy Gateway extension server: ListenerContextExample policies compiled into Envoy's basic_auth filter"
# The base image's own installer is not needed to run: remove it with the rest of the build.
RUN python -m pip uninstall --yes --quiet pip setuptools wheel
COPY --from=build /opt/extension-server /opt/extension-server
ENV PATH=/opt/extension-server/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 65532:65532
EXPOSE 5005 9090
ENTRYPOINT ["extension-server"]
CMD ["serve"]
