"""The legacy INDIGO PaaS Orchestrator REST surface (orchent, INFN Cloud dashboard) and its
additive extensions. Controllers get everything through ``LegacyApi`` (ports.py), which the
bootstrap builds: read models, the command service, authentication, the TOSCA validator."""
