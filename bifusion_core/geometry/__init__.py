"""Camera geometry shared by preparation (numpy: ``camera``) and the model (torch: ``projection``); one pixel-index convention."""
