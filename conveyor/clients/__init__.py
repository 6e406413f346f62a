"""One typed client per outside system: registry, ACR, Marathon, DC/OS, vCenter,
Docker Engine and Trivy, each translating its errors at one boundary."""
