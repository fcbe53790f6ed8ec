from p2p_offers.cli import main

raise SystemExit(main())
