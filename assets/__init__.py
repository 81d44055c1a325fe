"""Asset factories: zone declarations become landing, staging and quarantine assets and sensors."""
