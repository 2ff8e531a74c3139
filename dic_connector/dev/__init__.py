"""Everything to run the system on one machine: never part of a hospital deployment.

Modules and packages, in dependency order:

- ``synthetic``   seeded synthetic FHIR R4 data (the LMU/Gemelli pilot, PHAME-like sites)
- ``deployment``  a three-node deployment in one directory, and its nodes as processes
- ``sekmet``      the sekmet-fhir FHIR server as a local process (the demo's, the tests'
                  and the benchmarks' FHIR server)
- ``report``      the demo's JSON report (timings next to Sharemind's) and the keys and
                  client profiles ``dic demo --keep`` leaves
- ``subscription`` the demo's last step: a new patient on a FHIR server reaches the next
                  analysis through a FHIR Subscription and the connector service
- ``demo``        the embedded demo (``dic demo``)
"""
