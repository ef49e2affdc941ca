"""Video data: decoding and clip sampling (:mod:`.io`), clip views (:mod:`.views`), FAME
(:mod:`.fame`), the video data module (:mod:`.datamodule`) and DAVIS folders (:mod:`.davis`)."""
