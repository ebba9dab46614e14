"""Sales channels: one module per channel declaring one ``Channel`` record (``base.Channel``), the shared
pieces they are built from (raw storage, normalisation, ATS bookkeeping, the fast-path checks), and
``registry``, the only list of channels. Recipe for a new channel: docs/channels.md."""
