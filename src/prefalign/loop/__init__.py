"""The feedback loop's data steps: judged samples become preference pairs or SFT rows
(`pairs build`), and safety context distillation (`distill-context`), each with provenance and
a lineage record."""
