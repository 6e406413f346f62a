"""Development simulators of the systems a workstation cannot run: Marathon (DC/OS)
and vCenter."""
