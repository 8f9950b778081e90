"""Pure: study specs, search spaces, grid cells and seeded draws, refine's range narrowing,
objective references. No database, no torch."""
