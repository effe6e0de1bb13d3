"""The operators' console at /admin (sqladmin) and the audit trail of
superuser actions. `app.admin.console` builds the console; `app.admin.audit`
is imported by the API routes too, so it stays free of console imports."""
