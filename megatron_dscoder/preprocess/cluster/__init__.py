"""How tasks run on a shared work directory: the engines (:mod:`.engine`), the directory itself
(:mod:`.workdir`), every path and task name in it (:mod:`.layout`), and completion markers
(:mod:`.markers`)."""
