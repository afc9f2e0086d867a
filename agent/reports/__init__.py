"""Reports on the device: the on-disk spool every report enters first, and the reporter that sends it."""
