"""The feedback loop: judged samples become preference pairs or SFT rows (`pairs build`), safety
context distillation (`distill-context`), each with provenance and a lineage record, and K
rounds of generate → judge → pairs → DPO → evaluate (`prefalign loop`, loop.rounds)."""
