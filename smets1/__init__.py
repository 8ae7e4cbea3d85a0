"""The shared core that every role stands on; it imports no role.

Modules: `clock` (the one clock: virtual, scaled, real), `codes` (device states and
failure reasons, open enums), `eui64`, `structs` with `struct_fields` and
`structs_codegen` (the one way to declare a binary layout), `wire` (binary DCO ↔ device
frames), `image` and
`signing` (the ZigBee OTA firmware image, its ECDSA P-256 signature), `bus` (the transport
interface and its in-process twin), `mqtt`, `broker_url` and `routing` (the transport over
a real broker), `config`, `config_fleet`, `config_dcc` and `config_types` (the fleet config
models), `services` (the DCO API protocol: SRV 11.1, 11.2, 11.3) and `dco_http` (its HTTP
documents and call-channel messages), `metrics` (prometheus-client plumbing), `errors`
(the root of every error).

The roles (`emulator`, `dco_mock`, `scheduler`) import this package only; the composition
root (`orchestrator`) wires them together.
"""
