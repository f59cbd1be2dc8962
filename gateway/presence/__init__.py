"""Presence for the gateway's contacts (issue 19): who is Available, the documents that say
so in each format subscribers ask for, the subscription table, and the SUBSCRIBE/NOTIFY
transactions, sans-I/O like call control. `gateway.api.avatars` serves the images the
documents point at."""
