DROP INDEX IF EXISTS conversations_unresolved_idle;
DROP TABLE IF EXISTS auto_resolve_policies;
DROP TABLE IF EXISTS webhook_deliveries;
DROP TABLE IF EXISTS webhooks;
