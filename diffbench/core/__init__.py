"""The leaves: errors, devices and runtime, plug-in loading, where the shipped files are, the
System protocol and the Plan of one call, output folders, YAML, the lists of choices, atomic
files and the machine's facts. They import nothing of diffbench above them."""
