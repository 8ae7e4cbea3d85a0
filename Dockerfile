# One image for every role: smets1 run | dco | fleet | scheduler | clock | image.
# No broker inside: the roles take one by URL (--broker, SMETS1_BROKER); deploy/ runs
# eclipse-mosquitto beside them. (`smets1 distributed` without --broker wants a mosquitto
# on PATH, which this image does not have.)
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

# The exact versions the tests ran with (constraints.txt, kept with the project).
COPY pyproject.toml README.md constraints.txt ./
COPY smets1 smets1
COPY emulator emulator
COPY dco_mock dco_mock
COPY scheduler scheduler
COPY orchestrator orchestrator
RUN pip install -c constraints.txt . && rm -rf build *.egg-info

COPY fleet_configs fleet_configs

# Runs as uid/gid 10001 (numeric, so Kubernetes' runAsNonRoot can check it). Everything
# it writes goes under /state, its working directory: a role's default folders
# (runs/<config>/...) and HOME. The rest of the file system may be read-only; in the pods
# /state is a volume (deploy/) and /tmp an emptyDir.
RUN mkdir -p /state && chown 10001:10001 /state && chmod 0770 /state
ENV HOME=/state
WORKDIR /state
USER 10001:10001

ENTRYPOINT ["smets1"]
CMD ["--help"]
