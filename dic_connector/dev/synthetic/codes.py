"""Code systems, profiles and extension URLs used by the synthetic data and the mappings.

Where a convention of the German Medical Informatics Initiative core data set (MII KDS,
https://www.medizininformatik-initiative.de/de/der-kerndatensatz-der-medizininformatik-initiative)
exists it is used: Person module (Patient, Vitalstatus observation), Diagnose module
(ICD-10-GM with the ``seitenlokalisation`` laterality extension). Radiotherapy follows the
HL7 mCODE RadiotherapyCourseSummary (a Procedure with dose and fraction extensions), and ECOG
the LOINC panel 89247-1 with its LA answer codes. The PHAME (US) data uses ICD-10-CM, the US
Core race/ethnicity extensions and the Source of Payment Typology. Items with no standard
code (metastasis timing, local response, toxicity grade) use a project CodeSystem.
"""

from __future__ import annotations

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
ICD10_GM = "http://fhir.de/CodeSystem/bfarm/icd-10-gm"
ICD10_CM = "http://hl7.org/fhir/sid/icd-10-cm"
UCUM = "http://unitsofmeasure.org"
PILOT_CS = "https://dic-connector.example/fhir/CodeSystem/pilot-adrenal"

MII_PATIENT = (
    "https://www.medizininformatik-initiative.de/fhir/core/modul-person/StructureDefinition/Patient"
)
MII_VITALSTATUS = (
    "https://www.medizininformatik-initiative.de/fhir/core/modul-person/StructureDefinition/"
    "Vitalstatus"
)
MII_VITALSTATUS_CS = (
    "https://www.medizininformatik-initiative.de/fhir/core/modul-person/CodeSystem/Vitalstatus"
)
MII_DIAGNOSE = (
    "https://www.medizininformatik-initiative.de/fhir/core/modul-diagnose/StructureDefinition/"
    "Diagnose"
)
SEITENLOKALISATION = "http://fhir.de/StructureDefinition/seitenlokalisation"
SEITENLOKALISATION_CS = "https://fhir.kbv.de/CodeSystem/KBV_CS_SFHIR_ICD_SEITENLOKALISATION"

MCODE_COURSE = (
    "http://hl7.org/fhir/us/mcode/StructureDefinition/mcode-radiotherapy-course-summary"
)
MCODE_DOSE = (
    "http://hl7.org/fhir/us/mcode/StructureDefinition/mcode-radiotherapy-dose-delivered-to-volume"
)

ECOG_LOINC = "89247-1"
ECOG_ANSWERS = ("LA9622-7", "LA9623-5", "LA9624-3", "LA9625-0", "LA9626-8", "LA9627-6")
VITALSTATUS_LOINC = "67162-8"
RT_COURSE_SNOMED = "1217123003"  #: Radiotherapy course of treatment (regime/therapy)
ADRENAL_METASTASIS_ICD10 = "C79.7"

US_CORE_RACE = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race"
US_CORE_ETHNICITY = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-ethnicity"
OMB_RACE_ETHNICITY = "urn:oid:2.16.840.1.113883.6.238"
SOPT = "https://nahdo.org/sopt"  #: Source of Payment Typology
