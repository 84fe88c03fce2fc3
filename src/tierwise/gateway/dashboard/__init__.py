"""The gateway's dashboard: spend, routing and savings from the ledger, behind the admin key.

:func:`tierwise.gateway.dashboard.views.dashboard_routes` adds it to the gateway app;
:mod:`~tierwise.gateway.dashboard.queries` reads the ledger. The page draws its charts with
Chart.js 4.6.1 (MIT, vendored as ``static/chart.umd.min.js`` with its licence beside it), so
viewing it needs no network beyond the gateway.
"""
