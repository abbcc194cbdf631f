"""Application services: the domain rules applied to stored state. No HTTP here; the web layer calls these."""
