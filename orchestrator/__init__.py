"""The composition root: where the roles are wired together and run.

`smets1` (the core) holds what every role shares; `emulator`, `dco_mock` and `scheduler`
are the roles, each standing on the core alone. This package is the only one that imports
the roles, and nothing imports it:

    cli            the `smets1` command (run, image, dco, fleet, scheduler, distributed)
    image_cli      `smets1 image build|inspect|verify|keygen`
    roles_cli      `smets1 dco|fleet|scheduler|distributed`: flags, environment, clock
    campaign       one way to build images and a scheduler and submit a config's campaigns
    runner         `smets1 run`: every role in one process on the virtual clock
    roles          the role processes (DCO worker, fleet shard, scheduler) over MQTT/HTTP
    serving        what every role process needs: HTTP serving, signals, status files
    lag            how far a role process runs behind its shared clock
    status         the status documents role processes write and the launcher reads
    dco_client     the DCO's HTTP API as a `DcoApi`, for a scheduler in another process
    dco_channel    the client's side of a DCO worker's call channel (11.3, 11.2 on a WebSocket)
    mosquitto      a private Mosquitto broker (the launcher and the tests start one)
    distributed    `smets1 distributed`: every role as a process of its own, merged summary
    report         the self-contained HTML report of a run
    errors         OrchestratorError and its tree
"""
