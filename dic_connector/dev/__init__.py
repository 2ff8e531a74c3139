"""Everything to run the system on one machine: never part of a hospital deployment.

Modules and packages, in dependency order:

- ``synthetic``   seeded synthetic FHIR R4 data (the LMU/Gemelli pilot, PHAME-like sites)
- ``deployment``  a three-node deployment in one directory, and its nodes as processes
- ``demo``        the embedded demo (``dic demo``)
"""
