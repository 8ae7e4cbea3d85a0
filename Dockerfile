# One image for every role: smets1 run | dco | fleet | scheduler | distributed | image.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

COPY pyproject.toml README.md ./
COPY smets1 smets1
COPY emulator emulator
COPY dco_mock dco_mock
COPY scheduler scheduler
COPY orchestrator orchestrator
RUN pip install .

COPY fleet_configs fleet_configs

RUN useradd --create-home --uid 10001 smets1 && mkdir -p /state && chown smets1 /state
USER smets1

ENTRYPOINT ["smets1"]
CMD ["--help"]
