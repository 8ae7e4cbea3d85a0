"""The fleet: SMETS1 electricity meters (ESMEs) as sans-IO devices on a bus and a clock.

Modules: `model` (device model, link, the profile a device group shares), `faults` (what
goes wrong, and each device's random stream), `slots` (firmware slots and the flash store),
`reception` (block reception into the inactive slot), `device` (the ESME and its state
table), `fleet` (the host that serves one shard's devices: links, faults, timers), `errors`.
It imports only the `smets1` core, never `dco_mock` or `scheduler`.
"""
