-- Marketplace FBS orders arrive assigned to one of our warehouses: Ozon's posting carries
-- delivery_method.warehouse_id, a Wildberries order its warehouseId. The marketplace's courier collects the
-- parcel THERE, so the order must ship from that location and routing may not move it. NULL: the OMS routes
-- the order (own web store, call centre, offline).
ALTER TABLE oms.orders ADD COLUMN fulfilment_location_code text REFERENCES oms.locations;
COMMENT ON COLUMN oms.orders.fulfilment_location_code IS
  'location the channel assigned the order to (marketplace FBS warehouse); allocation only plans from it';
