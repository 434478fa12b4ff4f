"""Campaign stores: where a campaign's rows, claims and shared limits live.

:mod:`.postgres` is the PostgreSQL store (many workers on one campaign),
:mod:`.limits` the shared rate and live-call leases, :mod:`.worker` the
worker loop of ``voicehub campaign work``. The SQLite journal
(:mod:`voicehub_async.campaign.journal`) stays the embedded default for one
process. Nothing here is imported by ``voicehub_async`` itself: the driver
(``pip install 'voicehub-async[postgres]'``) is only needed when used.
"""
