"""Where the bytes of a run come from: input files and directories planned into references
(:mod:`.plan`), references cut into chunks (:mod:`.sources`), chunks read as records
(:mod:`.readers`), compressed streams (:mod:`.compression`)."""
