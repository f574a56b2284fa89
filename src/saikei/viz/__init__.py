"""saikei.viz (`sk.ts`): treescope integration for saikei types."""
