-- Poison chunks: how often a chunk was handed to a worker that started applying it, counted in a short
-- transaction of its own before the apply begins. A chunk that kills its worker (a crash, the OOM killer)
-- leaves no failed attempt behind, only this count; once it passes `poison_delivery_cap` the next delivery
-- fails the chunk (code `poison`) instead of applying it, so one chunk cannot hold a partition forever.
ALTER TABLE bulk_action_chunks ADD COLUMN deliveries integer NOT NULL DEFAULT 0 CHECK (deliveries >= 0);
