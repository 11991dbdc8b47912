# curate stage (see docs/design.md)
