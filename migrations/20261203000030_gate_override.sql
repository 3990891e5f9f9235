-- An audited override of a STALLED operation's gate (OverrideGate): the stage of the gate,
-- what it waited for, who let it pass and why. The next attempt passes that gate once;
-- cleared when the gate's stage finishes. NULL: no override pending. A nullable column
-- without a default: adding it rewrites nothing, and the old version ignores it.
ALTER TABLE operations ADD COLUMN IF NOT EXISTS gate_override jsonb;
